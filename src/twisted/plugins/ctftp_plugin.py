"""twistd plugin: ``twistd ctftp``. Imports nothing heavy at plugin-scan time."""

from twisted.application.service import ServiceMaker

ctftp = ServiceMaker("ctftp", "ctftp.tap", "TFTP provisioning server", "ctftp")

# twistd -ny examples/phone_configs.tac   (from the repository root)
import os
import sys

from twisted.application.service import Application

sys.path.insert(0, os.path.dirname(os.path.abspath("examples/phone_configs.py")))

import ctftp  # noqa: E402
from phone_configs import phoneService  # noqa: E402

config = ctftp.ServerConfig(root_dir="samples", listeners="127.0.0.1:6969", file_log=False)
application = Application("phone-configs")
phoneService(config).setServiceParent(application)

#!/bin/bash
# usage: storm.sh N  -- run storm a N times against port 6970
for i in $(seq 1 ${1:-5}); do
/work/shared/bench/tftpload --host 127.0.0.1 --port 6970 --file 'SEP%012d.cnf.xml' --name-count 2000 --total 2000 --concurrency 100 --blksize 512 --verify /tmp/bw/root/sample-4k.bin
done

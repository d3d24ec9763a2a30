"""Allocates the MiB given on the command line after two seconds, then idles."""
import sys
import time
from allot_agent import hold

time.sleep(2)
keep = hold(int(sys.argv[1]))
while True:
    time.sleep(1)

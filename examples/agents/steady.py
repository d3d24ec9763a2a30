"""Stays well within its quota: a little memory, a little cpu."""
import time
from allot_agent import hold

keep = hold(4)
while True:
    sum(range(20000))
    time.sleep(0.5)

"""How busy the machine is, for measurements that other work would skew.

The 1-minute load average, this process's own share of it, and the one rule
for "the machine was busy" that the precision probe and the CPU peak FLOP/s
measurement (`painless_tf.flops`) both follow.
"""

import math
import os
import time


def _load_average():
    """The 1-minute load average, or None where the OS has none."""
    try:
        return round(float(os.getloadavg()[0]), 2)
    except OSError:
        return None


# This process's clock and CPU time when this module was imported (early in
# every run), to tell its own share of the load average from other work's.
_IMPORTED = (time.monotonic(), time.process_time())


def _own_load():
    """This process's estimated share of the 1-minute load average.

    Its CPU time since import over the wall time, as the kernel's 1-minute
    moving average would weigh a steady rate over that time.
    """
    wall = time.monotonic() - _IMPORTED[0]
    if wall <= 0:
        return 0.0
    rate = (time.process_time() - _IMPORTED[1]) / wall
    return round(rate * (1 - math.exp(-wall / 60)), 2)


def _busy(loads, own, cores):
    """Whether other work kept more than half the cores busy.

    Other work is the 1-minute load average (at the start or the end of a
    measurement, whichever is higher) less this process's own share: a run
    alone on the machine does not call itself busy, while one other job
    using a core of two does slow a measurement.
    """
    known = [load for load in loads if load is not None]
    return bool(known) and max(known) - own > cores / 2

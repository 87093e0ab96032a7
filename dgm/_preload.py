"""Imported once, by the zygote that worker processes fork from (``dgm.worker``): torch, every
model family and their data, warmed up, so that each worker shares them instead of loading its own.
The objects made so far are then frozen out of the garbage collector's passes, which would otherwise
touch (and so copy into every worker) all of their memory pages."""

import gc

from dgm import worker

worker.warm_up()
gc.collect()
gc.freeze()

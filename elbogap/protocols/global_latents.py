"""The protocol of models with global latents, judged on the whole data set (:mod:`elbogap.global_latents.protocol`)."""

from elbogap.global_latents.protocol import curve_point, evaluate_global, run_bdmc
from elbogap.protocols.base import Protocol

#: one intra-op thread: these programs' tensors are small, and torch's threads cost more than they save (a 3x3
#: tril took 0.5 ms on two threads against 2 us on one; see elbogap.global_latents.evidence.one_thread)
GLOBAL = Protocol("global", evaluate=evaluate_global, curve_point=curve_point, bdmc=run_bdmc, threads=1)

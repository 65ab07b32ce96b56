"""Shared pytest setup for the parity tests."""


import torch

# The models here are tiny: torch's intra-op thread pool only adds synchronisation, and on a small CPU it fights
# XLA's own threads (measured on 2 cores: a torch forward + backward took ~2.5 s with 2 threads, 0.02 s with 1).
torch.set_num_threads(1)

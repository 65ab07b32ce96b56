"""Shared pytest setup for the parity tests."""

import os
import sys

import torch

# Make the repository importable when pytest runs without an editable install.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The models here are tiny: torch's intra-op thread pool only adds synchronisation, and on a small CPU it fights
# XLA's own threads (measured on 2 cores: a torch forward + backward took ~2.5 s with 2 threads, 0.02 s with 1).
torch.set_num_threads(1)

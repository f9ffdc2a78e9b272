"""Test-suite settings: one torch thread (the tests run tiny tensors, for which thread
start-up and spin-waiting cost more than they save, especially on a busy 2-core machine)."""

import torch

torch.set_num_threads(1)

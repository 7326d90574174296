"""One intra-op thread: tiny models gain nothing from more, and the machine's cores are shared."""
import torch

torch.set_num_threads(1)

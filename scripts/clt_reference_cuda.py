#!/usr/bin/env python3
"""Runs the PyTorch CLT reference (shared/bench/clt_reference.py) on a CUDA GPU, unchanged.

The reference is written for the CPU. This wrapper makes CUDA torch's default device (its
generators included) and synchronises the GPU whenever the reference reads its clock, so its
tokens/s count finished work, not queued kernels. After it, one JSON line gives the peak GPU
memory torch allocated. --synthetic only (an --acts file is loaded on the CPU).

usage: clt_reference_cuda.py PATH/TO/clt_reference.py --synthetic N --layers L --d D --features F ...
"""
import json
import runpy
import sys
import time

import torch

reference = sys.argv[1]
sys.argv = [reference] + sys.argv[2:]
torch.set_default_device("cuda")
_generator = torch.Generator


class _CudaGenerator:
    """Stands in for torch.Generator (a class, so torch's own `torch.Generator | None` annotations
    still evaluate): a generator on the GPU unless told otherwise."""

    def __new__(cls, device="cuda"):
        return _generator(device=device)


torch.Generator = _CudaGenerator
_clock = time.perf_counter


def synced_clock():
    torch.cuda.synchronize()
    return _clock()


time.perf_counter = synced_clock
runpy.run_path(reference, run_name="__main__")
print(json.dumps({"peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20), "device": torch.cuda.get_device_name()}))

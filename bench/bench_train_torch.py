"""PyTorch side of bench/bench-train.ts (issue 3's training benchmark).

Trains the same two models (the 2NN and the FedAvg CNN, 28x28x1 inputs, 10
classes) on random data with plain SGD, float32, CPU, and times it with the
warm-up and time budget the TypeScript side uses, so the two samples/s figures
compare like for like. Also measures the machine's FP32 matmul peak (torch.mm,
or numpy when torch is absent) so throughput can be read as a fraction of it.

Run by bench-train.ts as: /usr/bin/python3 bench_train_torch.py CONFIG_JSON
Writes one JSON object per line on stdout ("info", "peak", "cell", "error");
progress goes to stderr. Standard library plus torch/numpy only.
"""

import ctypes
import json
import os
import re
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # the peak can still come from numpy
    torch = None


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def progress(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def loaded_libraries(pattern):
    """Shared objects mapped into this process whose file name matches pattern."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and re.search(pattern, os.path.basename(parts[5])) and parts[5] not in found:
                    found.append(parts[5])
    except OSError:
        pass
    return found


def openblas_details(path):
    """OpenBLAS reports its build, kernel and thread count; other BLASes are named only by path."""
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    details = {}
    for fn, key, restype in (
        ("openblas_get_config", "config", ctypes.c_char_p),
        ("openblas_get_corename", "core", ctypes.c_char_p),
        ("openblas_get_num_threads", "threads", ctypes.c_int),
    ):
        if hasattr(lib, fn):
            f = getattr(lib, fn)
            f.restype = restype
            f.argtypes = []
            v = f()
            details[key] = v.decode() if isinstance(v, bytes) else v
    return details or None


def blas_info():
    # Loaded after a matmul has run, so a lazily opened BLAS is already mapped.
    libs = loaded_libraries(r"blas|mkl_|lapack|gomp|iomp|dnnl")
    info = {"libraries": libs}
    for path in libs:
        if "openblas" in os.path.basename(path):
            details = openblas_details(path)
            if details:
                info["openblas"] = details
                break
    if torch is not None:
        m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
        info["torch_blas_info"] = m.group(1) if m else None
    return info


def openblas_lib():
    for path in loaded_libraries(r"openblas"):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "openblas_set_num_threads") and hasattr(lib, "openblas_get_num_threads"):
            lib.openblas_get_num_threads.restype = ctypes.c_int
            return lib
    return None


def measure_peak(size, repeats):
    """Best-of-repeats FP32 GFLOP/s of a size x size x size matmul, on all the
    BLAS's threads and, when the BLAS is OpenBLAS, on one (the wasm backend
    runs single-threaded under Node, so that is the figure it can approach)."""
    flops = 2.0 * size**3
    if torch is not None:
        a = torch.rand(size, size, dtype=torch.float32)
        b = torch.rand(size, size, dtype=torch.float32)
        c = torch.empty(size, size, dtype=torch.float32)
        torch.mm(a, b, out=c)
        run = lambda: torch.mm(a, b, out=c)
        via = "torch.mm"
    else:
        import numpy as np

        rng = np.random.default_rng(0)
        a = rng.random((size, size), dtype=np.float32)
        b = rng.random((size, size), dtype=np.float32)
        c = np.empty((size, size), dtype=np.float32)
        np.matmul(a, b, out=c)
        run = lambda: np.matmul(a, b, out=c)
        via = "numpy.matmul (numpy " + np.__version__ + ")"

    def best_gflops():
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
        return flops / best / 1e9

    result = {"gflops": best_gflops(), "size": size, "repeats": repeats, "via": via}
    lib = openblas_lib()
    if lib is not None:
        threads = lib.openblas_get_num_threads()
        result["blas_threads"] = threads
        if threads > 1:
            lib.openblas_set_num_threads(1)
            try:
                run()
                result["gflops_1thread"] = best_gflops()
            finally:
                lib.openblas_set_num_threads(threads)
    return result


def build(name):
    # Same layers as core/model/zoo.ts; PyTorch lays images out NCHW, tfjs NHWC,
    # which changes the flatten order but not the arithmetic.
    if name == "2nn":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 200), nn.ReLU(),
            nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, 10),
        )
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(7 * 7 * 64, 512), nn.ReLU(),
            nn.Linear(512, 10),
        )
    raise ValueError("unknown model " + name)


def train(model, opt, x_all, y_all, batch, gen, stop):
    """Shuffled mini-batch SGD until stop(batches, seconds); mirrors trainLocally's loop,
    including keeping the loss and accuracy sums as tensors so no batch waits on a read."""
    n = x_all.shape[0]
    batches = 0
    samples = 0
    loss_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.int64)
    t0 = time.perf_counter()
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - batch + 1, batch):
            if stop(batches, time.perf_counter() - t0):
                seconds = time.perf_counter() - t0
                return batches, samples, seconds, float(loss_sum) / max(samples, 1)
            idx = order[start:start + batch]
            x = x_all.index_select(0, idx)
            y = y_all.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            out = model(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            with torch.no_grad():
                loss_sum += loss.detach() * batch
                correct += (out.argmax(1) == y).sum()
            batches += 1
            samples += batch


def measure_cell(name, batch, cfg):
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(1)
    model = build(name)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["learning_rate"])
    # As many examples as the TypeScript side holds: 32 batches, reshuffled each epoch.
    n = batch * 32
    x_all = torch.rand((n, 1, 28, 28), generator=gen, dtype=torch.float32)
    y_all = torch.randint(0, 10, (n,), generator=gen)
    if cfg["warmup_batches"] > 0:
        train(model, opt, x_all, y_all, batch, gen, lambda b, s: b >= cfg["warmup_batches"])
    min_b, min_s, max_s = cfg["min_batches"], cfg["min_seconds"], cfg.get("max_seconds")
    stop = lambda b, s: (b >= min_b and s >= min_s) or (max_s is not None and b >= 1 and s >= max_s)
    batches, samples, seconds, loss = train(model, opt, x_all, y_all, batch, gen, stop)
    return {
        "kind": "cell",
        "model": name,
        "batch": batch,
        "samples_per_second": samples / seconds,
        "samples": samples,
        "batches": batches,
        "seconds": seconds,
        "loss": loss,
        "params": sum(p.numel() for p in model.parameters()),
    }


def main():
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    cfg.setdefault("models", ["2nn", "cnn"])
    cfg.setdefault("batches", [10, 32, 64])
    cfg.setdefault("warmup_batches", 3)
    cfg.setdefault("min_seconds", 2.0)
    cfg.setdefault("min_batches", 10)
    cfg.setdefault("learning_rate", 0.01)
    cfg.setdefault("peak_size", 2048)
    cfg.setdefault("peak_repeats", 5)

    if torch is not None and cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))

    if cfg.get("peak", True):
        progress("measuring FP32 matmul peak ({0}x{0}, best of {1})".format(cfg["peak_size"], cfg["peak_repeats"]))
        try:
            emit(dict(kind="peak", **measure_peak(cfg["peak_size"], cfg["peak_repeats"])))
        except ImportError:
            emit({"kind": "error", "what": "peak", "message": "neither torch nor numpy is importable"})

    info = {"kind": "info", "python": sys.version.split()[0], "blas": blas_info()}
    if torch is not None:
        info.update(
            torch=torch.__version__,
            threads=torch.get_num_threads(),
            interop_threads=torch.get_num_interop_threads(),
            mkldnn=bool(torch.backends.mkldnn.is_available()),
            cpu_capability=(re.findall(r"CPU capability usage: (\S+)", torch.__config__.show()) or [None])[0],
        )
    emit(info)

    if cfg.get("peak_only"):
        return
    if torch is None:
        emit({"kind": "error", "what": "cells", "message": "torch is not importable"})
        return
    for name in cfg["models"]:
        for batch in cfg["batches"]:
            progress("{} batch {}: training".format(name, batch))
            try:
                cell = measure_cell(name, batch, cfg)
            except Exception as err:  # one failing cell should not lose the others
                emit({"kind": "cell", "model": name, "batch": batch, "error": "{}: {}".format(type(err).__name__, err)})
                continue
            progress("{} batch {}: {:.1f} samples/s ({} batches in {:.2f} s)".format(
                name, batch, cell["samples_per_second"], cell["batches"], cell["seconds"]))
            emit(cell)


if __name__ == "__main__":
    main()

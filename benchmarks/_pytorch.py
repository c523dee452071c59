"""PyTorch timed at its best: its memory formats, and for inference the
images per forward pass (shared by the benchmarks)."""

import time

# PyTorch's memory formats: the benchmark times each framework at its best,
# and PyTorch's channels_last trains 3-color networks 1.3-1.6x faster than
# its default NCHW here (32x32x3, 64x64x3, batch norm); NCHW won elsewhere.
TORCH_FORMATS = {"nchw": "contiguous_format", "nhwc": "channels_last"}


def faster_format(train):
    """``(images/s, format, result)`` of the faster memory format, where
    ``train(fmt)`` returns ``(images/s, result)``: both timed, every repeat
    (a format chosen once was the wrong one in some runs: the noise here is
    larger than the difference on some networks)."""
    runs = {fmt: train(fmt) for fmt in TORCH_FORMATS}
    fmt = max(runs, key=lambda f: runs[f][0])
    return runs[fmt][0], fmt, runs[fmt][1]


# Images per forward pass tried for PyTorch's inference. Its speed depends
# on it far more than skcnn's (which picks its own chunks): measured here,
# the reference network at 36,500 img/s in passes of 128 images but 13,000
# in passes of 1,000; (64, 128) filters 10,300 at 64, 3,800 at 1,000.
TORCH_CHUNKS = (16, 32, 64, 128, 256, 512)


def torch_infer_rate(torch, model, X_infer, fmt, chunk):
    """Images/s of PyTorch's inference in ``fmt`` in passes of ``chunk``."""
    memory_format = getattr(torch, TORCH_FORMATS[fmt])
    model = model.eval().to(memory_format=memory_format)
    # the (n, H, W, C) array seen as NCHW is channels_last already: no copy
    Xt = torch.from_numpy(X_infer).permute(0, 3, 1, 2)
    Xt = Xt.contiguous(memory_format=memory_format)
    with torch.inference_mode():
        model(Xt[:chunk])
        start = time.perf_counter()
        for i in range(0, len(Xt), chunk):
            torch.softmax(model(Xt[i : i + chunk]), dim=1)
    return len(Xt) / (time.perf_counter() - start)


def torch_candidates(torch, model, X_infer, keep=2):
    """PyTorch's ``keep`` fastest ``(memory format, images per pass)`` for
    this model: every setting tried twice on a quarter of ``X_infer``, its
    better rate counting -- its eager best, as a user who tunes the batch
    size would find it. The benchmark then times these on all images in
    every repeat and keeps the faster: one setting chosen once was, in one
    run of ten, half as fast on the whole set as the best."""
    sample = X_infer[: max(len(X_infer) // 4, max(TORCH_CHUNKS))]
    settings = [(fmt, chunk) for fmt in TORCH_FORMATS for chunk in TORCH_CHUNKS]
    rates = {s: 0.0 for s in settings}
    for _ in range(2):
        for setting in settings:
            rate = torch_infer_rate(torch, model, sample, *setting)
            rates[setting] = max(rates[setting], rate)
    return sorted(settings, key=rates.get, reverse=True)[:keep]


def torch_inference(torch, model, X_infer, candidates):
    """``(images/s, setting)`` of the fastest of ``candidates`` on all of
    ``X_infer``."""
    rates = {s: torch_infer_rate(torch, model, X_infer, *s) for s in candidates}
    best = max(rates, key=rates.get)
    return rates[best], best

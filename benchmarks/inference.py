# ruff: noqa: N806 - X is the conventional name of a feature matrix
"""Benchmark batch inference: Sluice's sklearn, onnx and keras types beside the raw call.

Two small models on 5 features, trained deterministically here (a LogisticRegression
classifier and an IsolationForest outlier detector), and a seeded Keras 3 network on the
torch backend (5 → 32 ReLU → 32 ReLU → 3 softmax), are scored on seeded rows in Arrow
batches of 100k through Sluice's model formats (features taken from the table, outputs
appended as ``<name>_label/_proba/_reason`` or ``_score/_anomaly/_reason`` columns), and
beside them by the library itself on one numpy array (``predict_proba`` / ``score_samples``
/ ``InferenceSession.run`` / Keras ``predict_on_batch``). One thread everywhere.

Run ``python benchmarks/inference.py [--quick]``; prints a Markdown section and writes it to
``benchmarks/results/inference.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("KERAS_BACKEND", "torch")

import argparse  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "inference.md"
FEATURES = ["f0", "f1", "f2", "f3", "f4"]
BATCH = 100_000


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    y = np.where(X[:, 0] + 0.5 * X[:, 1] - X[:, 3] + rng.normal(0, 0.5, n) > 0, "high", "low")
    return X, y


def _models() -> dict[str, Any]:
    from sklearn.ensemble import IsolationForest
    from sklearn.linear_model import LogisticRegression

    X, y = _data(20_000, 1)
    X32 = X.astype(np.float32)
    return {
        "LogisticRegression": LogisticRegression().fit(X32, y),
        "IsolationForest": IsolationForest(n_estimators=100, random_state=0).fit(X32),
    }


def _onnx(est: Any) -> bytes:
    from skl2onnx import to_onnx

    sample = np.zeros((1, len(FEATURES)), dtype=np.float32)
    options = {id(est): {"zipmap": False}} if hasattr(est, "predict_proba") else None
    opset = {"": 17, "ai.onnx.ml": 3}
    return to_onnx(est, sample, options=options, target_opset=opset).SerializeToString()


def _session(blob: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])


def _rate(fn: Callable[[], Any], rows: int, repeats: int = 2) -> float:
    """Best rows per second of ``fn`` over ``repeats`` runs."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return rows / best


def _sluice_model(settings: Any, name: str, kind: str, path: str, threshold: bool) -> Any:
    from sluice.config.models import ModelConfig
    from sluice.models.base import ModelContext, create_model

    options: dict[str, Any] = {"path": path, "threads": 1}
    if threshold:
        options["threshold"] = 0.6 if kind == "sklearn" else 0.0
    config = ModelConfig(name=name, type=kind, features=FEATURES, **options)
    return create_model(config, ModelContext("bench", settings))


def measure(rows: int) -> list[tuple[str, str, float, float]]:
    """(model, format, raw rows/s, Sluice rows/s) for each model and format."""
    import joblib

    from sluice.core.settings import Settings

    X, _ = _data(rows, 2)
    X32 = X.astype(np.float32)
    batches = [
        pa.table({f: X[i : i + BATCH, j] for j, f in enumerate(FEATURES)})
        for i in range(0, rows, BATCH)
    ]
    out = []
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        settings.models_dir.mkdir(parents=True, exist_ok=True)
        for name, est in _models().items():
            detector = not hasattr(est, "predict_proba")
            joblib.dump(est, settings.models_dir / f"{name}.joblib")
            blob = _onnx(est)
            (settings.models_dir / f"{name}.onnx").write_bytes(blob)
            raw_sk = est.score_samples if detector else est.predict_proba
            session = _session(blob)
            feed = {session.get_inputs()[0].name: X32}
            for kind, raw in (
                ("sklearn", lambda f=raw_sk: f(X32)),
                ("onnx", lambda s=session, d=feed: s.run(None, d)),
            ):
                suffix = "joblib" if kind == "sklearn" else "onnx"
                model = _sluice_model(settings, "m", kind, f"{name}.{suffix}", detector)

                def wrapped(m: Any = model) -> None:
                    for table in batches:
                        m.score(table)

                out.append((name, kind, _rate(raw, rows), _rate(wrapped, rows)))
        out += _keras_rows(settings, X32, batches)
    return out


def _keras_rows(
    settings: Any, x32: np.ndarray, batches: list[pa.Table]
) -> list[tuple[str, str, float, float]]:
    """A seeded Keras network on the torch backend: Sluice ``keras`` beside two raw calls.

    The raw calls are ``predict_on_batch`` and the model called on a tensor under
    ``torch.no_grad()`` (what Sluice does, without reading or writing Arrow).
    """
    import keras
    import torch

    torch.set_num_threads(1)
    keras.utils.set_random_seed(0)
    layers = keras.layers
    net = keras.Sequential(
        [
            keras.Input((len(FEATURES),)),
            layers.Dense(32, activation="relu"),
            layers.Dense(32, activation="relu"),
            layers.Dense(3, activation="softmax"),
        ]
    )
    with warnings.catch_warnings():  # keras on torch trips a numpy 2 deprecation converting
        warnings.simplefilter("ignore", DeprecationWarning)
        net.save(str(settings.models_dir / "mlp.keras"))
        model = _sluice_model(settings, "m", "keras", "mlp.keras", False)

        def wrapped() -> None:
            for table in batches:
                model.score(table)

        on_batch = _rate(lambda: net.predict_on_batch(x32), len(x32))

        def direct() -> None:
            with torch.no_grad():
                net(torch.from_numpy(x32), training=False).numpy()

        called = _rate(direct, len(x32))
        ours = _rate(wrapped, len(x32))
    return [
        ("Keras MLP, raw = `predict_on_batch`", "keras (torch)", on_batch, ours),
        ("Keras MLP, raw = `model(x)` under `no_grad`", "keras (torch)", called, ours),
    ]


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def main() -> None:
    """Run the benchmark and write the Markdown section."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200k rows instead of 1M")
    args = parser.parse_args()
    rows = 200_000 if args.quick else 1_000_000
    results = measure(rows)
    lines = [
        "## Batch inference (`sklearn`, `onnx` and `keras` model types)",
        "",
        f"Measured by `benchmarks/inference.py{' --quick' if args.quick else ''}` on "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        "one thread.",
        f"{rows:,} rows of 5 features in Arrow batches of {BATCH:,}; Sluice reads the features "
        "from each table and appends its output columns (label, probability and reason; or "
        "score, anomaly flag and reason). The raw call is the library on one numpy array "
        "(`predict_proba` / `score_samples` / `InferenceSession.run` / Keras "
        "`predict_on_batch`, torch backend, keras "
        f"{_version('keras')}, torch {_version('torch')}).",
        "",
        "| model | format | raw call rows/s | Sluice rows/s | Sluice / raw |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {kind} | {raw:,.0f} | {ours:,.0f} | {ours / raw:.2f} |"
        for name, kind, raw, ours in results
    ]
    text = "\n".join([*lines, ""])
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()

"""Models for the service benchmark, made deterministically in a fresh ``SLUICE_HOME``.

* ``temp_anomaly`` (``online_anomaly``): a generator pipeline run for a few epochs, so the
  model's learned state sits in the pipeline checkpoint and the online-model index, as it does
  under ``sluice run``.
* ``heat_onnx`` (``onnx``): a scikit-learn logistic regression converted with skl2onnx
  (zipmap off) and registered as the production version, as a user would register a file.
* ``heat_sklearn`` (``sklearn``): the same logistic regression saved with joblib.
"""

from __future__ import annotations

from pathlib import Path

FEATURES = ["temperature", "pressure", "vibration"]
ONLINE = "temp_anomaly"
ONNX = "heat_onnx"
SKLEARN = "heat_sklearn"
RECORD = {"device_id": "dev-0007", "temperature": 84.0, "pressure": 101.7, "vibration": 2.9}


def train_online(home: Path, events: int = 20_000) -> None:
    """Run a generator pipeline with an ``online_anomaly`` model until it has learned."""
    from sluice.config.models import Pipeline
    from sluice.core.settings import Settings
    from sluice.runners.local import LocalRunner

    pipeline = Pipeline.model_validate(
        {
            "name": "telemetry",
            "source": {"type": "generator", "events": events, "devices": 20, "labels": False},
            "batch": {"max_rows": 5_000},
            "models": [
                {"name": ONLINE, "type": "online_anomaly", "features": FEATURES, "key": "device_id"}
            ],
            "sinks": [{"type": "lake", "table": "telemetry"}],
        }
    )
    LocalRunner(pipeline, Settings(home=home), until_idle=True, idle_timeout=0.5).run()


def register_classifiers(home: Path, workdir: Path) -> None:
    """Register a small classifier as an ONNX file and as a joblib file, both production."""
    import joblib
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from sluice.core.settings import Settings
    from sluice.models.registry import ModelRegistry

    rng = np.random.default_rng(0)
    x = rng.normal([80.0, 101.0, 2.8], [5.0, 1.0, 0.3], size=(500, 3)).astype(np.float32)
    y = np.where(x[:, 0] > 80.0, "hot", "cold")
    clf = LogisticRegression(max_iter=500).fit(x, y)
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    onnx_path = workdir / "heat.onnx"
    onnx_path.write_bytes(onx.SerializeToString())
    joblib_path = workdir / "heat.joblib"
    joblib.dump(clf, joblib_path)
    registry = ModelRegistry(Settings(home=home))
    classes = {"classes": [str(c) for c in clf.classes_]}
    for name, fmt, path in ((ONNX, "onnx", onnx_path), (SKLEARN, "sklearn", joblib_path)):
        registry.register(name, fmt, path, features=FEATURES, params=classes, stage="production")


def prepare(home: Path, workdir: Path) -> None:
    """All three models in ``home``."""
    train_online(home)
    register_classifiers(home, workdir)

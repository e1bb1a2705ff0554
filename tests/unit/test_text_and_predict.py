"""Text classifier training and scoring; sluice.predict for strings and records."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pytest

from sluice.config.models import ModelConfig
from sluice.core.errors import ModelError, NotFoundError
from sluice.models.base import ModelContext, create_model
from sluice.models.predict import Predictor
from sluice.models.registry import ModelRegistry
from sluice.models.text import train_text_classifier

TEXTS = {
    "billing": [
        "I was charged twice on my invoice",
        "refund the duplicate payment please",
        "my credit card was billed the wrong amount",
        "invoice total is wrong",
    ],
    "technical": [
        "the app crashes when I open settings",
        "error 500 when uploading a file",
        "the sensor dashboard does not load",
        "sync fails with a timeout error",
    ],
    "shipping": [
        "my parcel has not arrived yet",
        "the delivery was sent to the wrong address",
        "tracking number shows no update",
        "package arrived damaged in transit",
    ],
}


def _data(repeat: int = 6) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for label, items in TEXTS.items():
        for i in range(repeat):
            for text in items:
                texts.append(f"{text} {'please help' if i % 2 else 'thanks'} ref {i}")
                labels.append(label)
    return texts, labels


def _register(settings, tmp_path: Path) -> None:
    texts, labels = _data()
    model, metrics = train_text_classifier(texts, labels)
    assert metrics["accuracy"] > 0.9
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    ModelRegistry(settings).register(
        "tickets",
        "text_classifier",
        path,
        features=["text"],
        metrics=metrics,
        params={"classes": list(TEXTS)},
        stage="production",
    )


def test_text_classifier_routes_text_with_reasons(settings, tmp_path: Path) -> None:
    _register(settings, tmp_path)
    model = create_model(
        ModelConfig(name="tickets", type="text_classifier", features=["text"]),
        ModelContext("p", settings),
    )
    out = model.score(
        pa.table(
            {"text": ["I got billed twice, refund please", "the app crashes with an error", None]}
        )
    )
    labels = out.column("tickets_label").to_pylist()
    assert labels[:2] == ["billing", "technical"]
    reason = out.column("tickets_reason")[0].as_py()
    assert reason.startswith("billing (p=") and "key word:" in reason


def test_train_needs_two_labels() -> None:
    with pytest.raises(ModelError, match="two distinct labels"):
        train_text_classifier(["a", "b", "c"], ["x", "x", "x"])


def test_predict_string_uses_default_text_model(settings, tmp_path: Path) -> None:
    _register(settings, tmp_path)
    predictor = Predictor(settings)
    one = predictor.predict("my parcel never arrived")
    assert one["model"] == "tickets" and one["prediction"]["label"] == "shipping"
    many = predictor.predict(["refund my invoice", "error when uploading"], model="tickets")
    assert [p["label"] for p in many["predictions"]] == ["billing", "technical"]


def test_predict_errors(settings) -> None:
    predictor = Predictor(settings)
    with pytest.raises(NotFoundError, match="no text classifier"):
        predictor.predict("anything")
    with pytest.raises(ModelError, match="must be a string, an object"):
        predictor.predict(42)
    with pytest.raises(ModelError, match="empty"):
        predictor.predict([])


def test_drift_monitor_detects_shift_not_noise() -> None:
    from sluice.config.models import DriftSpec
    from sluice.models.drift import DriftMonitor

    rng = np.random.default_rng(1)
    spec = DriftSpec(reference=2000, window=2000)
    stable = DriftMonitor(spec, ["x"])
    for _ in range(10):
        assert stable.update(rng.normal(0, 1, (1000, 1))) == []
    shifted = DriftMonitor(spec, ["x"])
    shifted.update(rng.normal(0, 1, (2000, 1)))
    events = shifted.update(rng.normal(1.5, 1, (2000, 1)))
    assert {e.detector for e in events} & {"psi", "page_hinkley"}
    restored = DriftMonitor(spec, [])
    restored.restore(shifted.state())
    assert restored.columns == ["x"] and restored.edges is not None

"""Free-text classification: TF-IDF + a linear model (scikit-learn), e.g. ticket routing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.config.models import ModelConfig
from sluice.core.errors import ModelError
from sluice.models.base import ModelContext
from sluice.models.formats import SklearnModel
from sluice.models.inference import append_outputs, from_probabilities


def build_text_pipeline(seed: int = 0) -> Any:
    """An untrained TF-IDF (words + character n-grams) → logistic-regression pipeline."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    features = FeatureUnion(
        [
            ("words", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)),
            (
                "chars",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(3, 5),
                    min_df=2,
                    sublinear_tf=True,
                    max_features=50_000,
                ),
            ),
        ]
    )
    return Pipeline(
        [("tfidf", features), ("clf", LogisticRegression(max_iter=1000, C=4.0, random_state=seed))]
    )


def train_text_classifier(
    texts: list[str], labels: list[str], *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Any, dict[str, float]]:
    """Fit on a shuffled split, report held-out accuracy and macro F1, refit on all data."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split

    if len(set(labels)) < 2:
        raise ModelError("a text classifier needs at least two distinct labels")
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    model = build_text_pipeline(seed).fit(x_train, y_train)
    predicted = model.predict(x_test)
    metrics = {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "f1_macro": float(f1_score(y_test, predicted, average="macro")),
        "n_train": len(x_train),
        "n_test": len(x_test),
    }
    return build_text_pipeline(seed).fit(texts, labels), metrics


def _top_word(model: Any, texts: list[str], labels: np.ndarray) -> np.ndarray:
    """The word that pushed each text most towards its predicted class (vectorised per class)."""
    words = model.named_steps["tfidf"].transformer_list[0][1]
    vocab = np.asarray(words.get_feature_names_out(), dtype=object)
    clf = model.named_steps["clf"]
    coef = clf.coef_[:, : len(vocab)]
    if coef.shape[0] == 1:
        coef = np.vstack([-coef[0], coef[0]])
    X = words.transform(texts).tocsr()
    out = np.full(len(texts), "", dtype=object)
    for index, cls in enumerate(clf.classes_):
        rows = np.flatnonzero(labels == str(cls))
        if rows.size:
            contrib = X[rows].multiply(coef[index]).tocsr()
            best = np.asarray(contrib.argmax(axis=1)).reshape(-1)
            has_word = np.asarray(contrib.max(axis=1).todense()).reshape(-1) > 0
            out[rows] = np.where(has_word, vocab[best], "")
    return out


class TextClassifierModel(SklearnModel):
    """Routes free text to a label (``<name>_label``, ``_proba``, ``_reason``)."""

    format = "text_classifier"

    def __init__(self, config: ModelConfig, context: ModelContext) -> None:
        extra = config.options  # a copy: ``text`` is this model's own option, not FileModel's
        text_column = extra.pop("text", None)
        self.text_column = text_column or (config.features[0] if config.features else "text")
        common = config.model_dump(exclude={*config.options, "features"})
        super().__init__(ModelConfig.model_validate({**common, **extra, "features": []}), context)

    def load_artifact(self, path: Path) -> None:
        """Load the fitted TF-IDF pipeline."""
        super().load_artifact(path)
        if "tfidf" not in getattr(self.estimator, "named_steps", {}):
            raise ModelError(f"model {self.name!r}: {path.name} is not a text pipeline")

    def expected_features(self) -> int | None:
        """Text models take one text column."""
        return None

    def predict_texts(self, texts: list[str]) -> Any:
        """Classify texts; return the output arrays."""
        probabilities = self.estimator.predict_proba(texts)
        out = from_probabilities(probabilities, [str(c) for c in self.estimator.classes_])
        assert out.label is not None and out.proba is not None
        word = _top_word(self.estimator, texts, out.label).astype(str)
        reason = np.char.add(
            np.char.add(out.label.astype(str), np.char.mod(" (p=%.2f", out.proba)),
            np.where(word != "", np.char.add("; key word: ", word), ""),
        )
        out.reason = np.char.add(reason, ")").astype(object)
        return out

    def score(self, table: pa.Table) -> pa.Table:
        """Classify the text column of ``table``."""
        if self.text_column not in table.column_names:
            raise ModelError(f"model {self.name!r}: missing text column {self.text_column!r}")
        if table.num_rows == 0:
            return table  # nothing to classify (the estimator refuses zero samples)
        texts = pc.fill_null(table.column(self.text_column), "").to_pylist()
        return append_outputs(table, self.name, self.predict_texts(texts))

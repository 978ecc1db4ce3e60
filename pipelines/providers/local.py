"""The local provider: a scikit-learn text classifier trained from a step's labeled examples and
review decisions. Runs in-process and offline; a call costs nothing but CPU."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import pickle
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline

from pipelines.providers.base import (
    CallRequest,
    CallResult,
    ConfigurationError,
    InputError,
    Kind,
    Provider,
)

# Sigmoid calibration fits two parameters per class on held-out folds; with fewer than ten
# examples of a class each fold holds two or three of them and the fit is noise, worse than the
# logistic regression's own probabilities. Above that, calibration corrects LR's habit of being
# under-confident on sparse TF-IDF features, which matters because thresholds are set on these.
CALIBRATION_MIN_PER_CLASS = 10
_CALIBRATION_FOLDS = 3

_MAGIC = b"sluice-local-model\n"
_FORMAT = 1

# The messages sklearn warns with when a cross-validation fold lacks a class; we accept that on
# purpose for rare labels (see local_cross_validated), so they are noise in the worker's log.
_RARE_CLASS_WARNINGS = (
    r"The least populated class in y has only",
    r"Number of classes in training fold",
)


def _features() -> FeatureUnion:
    # Words and word pairs carry the topic; character n-grams within words survive typos,
    # inflections and ticket-speak ("refnd", "refunded") that a word vocabulary would miss.
    return FeatureUnion(
        [
            (
                "words",
                TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode"),
            ),
            (
                "chars",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(3, 5),
                    sublinear_tf=True,
                    strip_accents="unicode",
                ),
            ),
        ]
    )


class TextClassifier(ClassifierMixin, BaseEstimator):
    """TF-IDF and logistic regression, calibrated when every class has enough examples.

    Deciding at fit time (rather than once for the whole data set) lets cross-validation refit it
    on each fold with the choice that fold's data allows."""

    def __init__(self, *, calibration_min_per_class: int = CALIBRATION_MIN_PER_CLASS) -> None:
        self.calibration_min_per_class = calibration_min_per_class

    def fit(self, X: Sequence[str], y: Sequence[Any]) -> TextClassifier:
        """Fit on texts X and labels y."""
        texts, targets = list(X), np.asarray(y)
        counts = Counter(targets.tolist())
        self.classes_ = np.array(sorted(counts))
        if len(counts) == 1:
            # Only a cross-validation fold can be this poor (training refuses it): a model that
            # saw one class predicts it, which is the honest out-of-fold answer.
            self.model_ = None
            self.calibrated_ = False
            return self
        pipeline = Pipeline(
            [("features", _features()), ("classifier", LogisticRegression(C=10, max_iter=2000))]
        )
        self.calibrated_ = min(counts.values()) >= self.calibration_min_per_class
        if self.calibrated_:
            # ensemble=False: the calibrator learns from out-of-fold predictions, then one model
            # fitted on everything serves; the default keeps one model per fold, which makes
            # every prediction three times as slow for no better calibration at this size.
            self.model_ = CalibratedClassifierCV(
                pipeline, method="sigmoid", cv=_CALIBRATION_FOLDS, ensemble=False
            ).fit(texts, targets)
        else:
            self.model_ = pipeline.fit(texts, targets)
        return self

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        """Class probabilities, columns in the order of classes_."""
        texts = list(X)
        if self.model_ is None:
            return np.ones((len(texts), 1))
        return self.model_.predict_proba(texts)

    def predict(self, X: Sequence[str]) -> np.ndarray:
        """The most probable class of each text."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


@dataclass(frozen=True)
class LocalModel:
    """A trained classifier and what it was trained on."""

    classifier: TextClassifier
    labels: tuple[str, ...]
    examples: int
    calibrated: bool

    def probabilities(self, text: str) -> dict[str, float]:
        """Return each label's probability for one text; they sum to 1."""
        return self.probabilities_many([text])[0]

    def probabilities_many(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """The same for many texts in one prediction: vectorising and predicting a batch costs
        a fraction of doing it text by text."""
        labels = [str(label) for label in self.classifier.classes_]
        return [
            {label: float(p) for label, p in zip(labels, row, strict=True)}
            for row in self.classifier.predict_proba(list(texts))
        ]


def _checked_examples(texts: Sequence[str], labels: Sequence[str]) -> tuple[list[str], list[str]]:
    texts, labels = list(texts), [str(label) for label in labels]
    if len(texts) != len(labels):
        raise InputError(f"{len(texts)} texts but {len(labels)} labels: they must pair up.")
    if len(texts) < 2:
        raise InputError(f"Training needs at least 2 labeled examples; there {_are(len(texts))}.")
    if not all(isinstance(text, str) for text in texts):
        raise InputError("Every example's text must be a string.")
    classes = sorted(set(labels))
    if len(classes) < 2:
        only = f' ("{classes[0]}")' if classes else ""
        raise InputError(
            f"Training needs examples of at least 2 labels; every example has the same one{only}."
        )
    return texts, labels


def _are(count: int) -> str:
    return "is 1" if count == 1 else f"are {count}"


def local_train(*, texts: Sequence[str], labels: Sequence[str]) -> bytes:
    """Train a classifier on labeled texts and return it serialised for local_load."""
    texts, labels = _checked_examples(texts, labels)
    try:
        classifier = TextClassifier().fit(texts, labels)
    except ValueError as exc:
        # TF-IDF refuses a corpus with no words at all ("empty vocabulary").
        raise InputError(f"The examples have nothing to learn from: {exc}") from exc
    header = {
        "format": _FORMAT,
        "sklearn": sklearn.__version__,
        "labels": [str(label) for label in classifier.classes_],
        "examples": len(texts),
        "calibrated": bool(classifier.calibrated_),
    }
    buffer = io.BytesIO()
    buffer.write(_MAGIC)
    buffer.write(json.dumps(header).encode() + b"\n")
    pickle.dump(classifier, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    return buffer.getvalue()


# Models this process loaded, by the digest of their bytes: a worker builds a provider per batch
# and should not unpickle the same model every time.
_LOADED: dict[bytes, LocalModel] = {}
_LOADED_MAX = 8


def _loaded(data: bytes) -> LocalModel:
    digest = hashlib.sha256(data).digest()
    model = _LOADED.get(digest)
    if model is None:
        model = local_load(data)
        if len(_LOADED) >= _LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[digest] = model
    return model


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def local_load(data: bytes) -> LocalModel:
    """Load a model from local_train's bytes; ConfigurationError if it must be retrained."""
    if not data.startswith(_MAGIC):
        raise ConfigurationError("The stored local model is not one Sluice trained: retrain it.")
    header_line, _, payload = data[len(_MAGIC) :].partition(b"\n")
    try:
        header = json.loads(header_line)
    except ValueError:
        raise ConfigurationError("The stored local model is damaged: retrain it.") from None
    if header.get("format") != _FORMAT:
        raise ConfigurationError(
            f"The stored local model has format {header.get('format')!r}, this Sluice reads "
            f"{_FORMAT}: retrain it."
        )
    # Pickled estimators are only reliable within the scikit-learn release that wrote them;
    # refusing is better than predicting with silently different maths.
    if _minor(str(header.get("sklearn"))) != _minor(sklearn.__version__):
        raise ConfigurationError(
            f"The local model was trained with scikit-learn {header.get('sklearn')} and this "
            f"process runs {sklearn.__version__}: retrain it."
        )
    try:
        # Only bytes local_train wrote reach here: they come from our own database, and anyone
        # who can write there already controls the application.
        classifier = pickle.loads(payload)  # noqa: S301
    except Exception as exc:
        raise ConfigurationError(
            f"The stored local model cannot be read ({exc}): retrain it."
        ) from exc
    if not isinstance(classifier, TextClassifier):
        raise ConfigurationError("The stored local model is not one Sluice trained: retrain it.")
    return LocalModel(
        classifier=classifier,
        labels=tuple(str(label) for label in classifier.classes_),
        examples=int(header.get("examples", 0)),
        calibrated=bool(header.get("calibrated", False)),
    )


def local_cross_validated(
    *, texts: Sequence[str], labels: Sequence[str], folds: int = 5
) -> list[tuple[str, str, float]]:
    """Return (true label, predicted label, confidence) per example, predicted out of fold."""
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    texts, labels = _checked_examples(texts, labels)
    # Stratified folds need every class in every fold: with k folds a class of n < k examples
    # cannot be spread, so k shrinks to the smallest class. A label seen only once still gets one
    # split with 2 folds: its example is predicted by a model that never saw the label, so it comes
    # out wrong, which is the truthful outcome for a label the model has barely learned.
    smallest = min(Counter(labels).values())
    splits = max(2, min(folds, smallest))
    cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        for message in _RARE_CLASS_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        try:
            # cross_val_predict encodes labels as sorted integers for predict_proba, so column j
            # is the j-th label in sorted order.
            probabilities = cross_val_predict(
                TextClassifier(), texts, labels, cv=cv, method="predict_proba"
            )
        except ValueError as exc:
            raise InputError(f"The examples have nothing to learn from: {exc}") from exc
    classes = sorted(set(labels))
    outcomes = []
    for truth, row in zip(labels, probabilities, strict=True):
        best = int(np.argmax(row))
        outcomes.append((truth, classes[best], float(row[best])))
    return outcomes


class LocalProvider(Provider):
    """Classifies with a trained LocalModel in a worker thread, so the event loop keeps going."""

    kind: ClassVar[str] = Kind.LOCAL

    def __init__(self, *, model_bytes: bytes, max_concurrency: int = 16) -> None:
        self._model = _loaded(model_bytes)
        # Calls made in the same turn of the event loop are predicted together, in one thread
        # hop; max_concurrency bounds how many predictions run at once.
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._pending: list[tuple[str, asyncio.Future[dict[str, float]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def model(self) -> LocalModel:
        """The loaded model, for callers that show its labels or size."""
        return self._model

    async def call(self, request: CallRequest) -> CallResult:
        """Classify request.input_text; the confidence is the chosen label's probability."""
        if request.labels is None:
            raise ConfigurationError(
                "The local model only classifies: a generate step needs an OpenAI-compatible "
                "or simulated provider."
            )
        text = request.input_text.strip()
        if not text:
            raise InputError("There is no text to classify: the item's input text is empty.")
        started = time.perf_counter()
        probabilities = await self._predict(text)
        latency_ms = (time.perf_counter() - started) * 1000
        # A step whose labels changed since training may not offer every label the model knows;
        # we choose among the step's labels but keep the model's own probability (not
        # renormalised), so mass on a retired label lowers the confidence instead of hiding.
        if request.labels:
            allowed = [label for label in request.labels if label in probabilities]
        else:
            allowed = list(probabilities)
        if not allowed:
            raise ConfigurationError(
                f"The local model knows the labels {', '.join(self._model.labels)}, none of which "
                f"this step has ({', '.join(request.labels)}): retrain it."
            )
        label = max(allowed, key=probabilities.__getitem__)
        ranked = dict(sorted(probabilities.items(), key=lambda kv: kv[1], reverse=True))
        return CallResult(
            output={"label": label},
            confidence=probabilities[label],
            input_tokens=len(text.split()),
            output_tokens=1,
            latency_ms=latency_ms,
            raw=json.dumps({"probabilities": ranked}),
        )

    async def _predict(self, text: str) -> dict[str, float]:
        future: asyncio.Future[dict[str, float]] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if len(self._pending) == 1:
            # The first call of this turn flushes once the others had their turn to join.
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            async with self._semaphore:
                rows = await asyncio.to_thread(
                    self._model.probabilities_many, [text for text, _ in batch]
                )
        except Exception as exc:  # every waiting call hears of it, none hangs
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), row in zip(batch, rows, strict=True):
            if not future.done():
                future.set_result(row)

"""ExemplarLCAClassifier: scikit-learn conventions and estimator checks."""
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from spikevit.lca import ExemplarLCAClassifier


@parametrize_with_checks([ExemplarLCAClassifier(lam=0.05, tau=5.0, steps=30)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_digits_accuracy_and_api():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.3, random_state=0, stratify=y)
    clf = ExemplarLCAClassifier(lam=0.3, tau=20.0, steps=50).fit(Xtr, ytr)
    assert clf.atoms_.shape == (64, len(ytr))
    assert clf.score(Xte, yte) > 0.95
    codes = clf.transform(Xte[:5])
    assert codes.shape == (5, len(ytr)) and (codes >= 0).all()
    proba = clf.predict_proba(Xte[:5])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert (clf.classes_[proba.argmax(1)] == clf.predict(Xte[:5])).all()


def test_string_labels_pipeline_and_model_selection():
    X, y = load_digits(return_X_y=True)
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])[y]
    pipe = make_pipeline(StandardScaler(), ExemplarLCAClassifier(dictionary_size=400, selection="balanced",
                                                                  lam=1.0, tau=20.0, steps=40))
    scores = cross_val_score(pipe, X[:900], names[:900], cv=3)
    assert scores.mean() > 0.85
    pipe.fit(X[:600], names[:600])
    assert set(pipe.predict(X[600:650])) <= set(names)

"""Save the training curve, the first-layer filters and some feature maps.

Run:  python examples/plots.py    (needs: pip install "skcnn[plot]")

Writes loss_curve.png, filters.png and feature_maps.png to the current
directory. The displays take the fitted pipeline as it is: the feature
maps are those of the image after the pipeline's scaler.
"""

import matplotlib

matplotlib.use("Agg")  # files only, no window

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler  # noqa: E402

from skcnn import CNNClassifier  # noqa: E402
from skcnn.plot import FeatureMapDisplay, FilterDisplay, LossCurveDisplay  # noqa: E402


def main(directory="."):
    X, y = load_digits(return_X_y=True)
    # early stopping: the loss curve marks the epoch whose weights it kept
    clf = make_pipeline(
        MinMaxScaler(),
        CNNClassifier(batch_size=32, early_stopping=True, random_state=0),
    )
    clf.fit(X, y)
    paths = []
    for name, display in [
        ("loss_curve.png", LossCurveDisplay.from_estimator(clf)),
        ("filters.png", FilterDisplay.from_estimator(clf)),
        ("feature_maps.png", FeatureMapDisplay.from_estimator(clf, X[0])),
    ]:
        path = f"{directory}/{name}"
        display.figure_.savefig(path, dpi=100)
        paths.append(path)
        print(f"wrote {path}")
    return paths


if __name__ == "__main__":
    main()

"""Grid search over CNNClassifier's training features on the 8x8 digits.

Run:  python examples/grid_search.py

GridSearchCV clones, fits and scores the estimator like any scikit-learn
model; n_jobs=2 runs the fits in parallel processes (skcnn then uses one
thread per process, following joblib's BLAS thread limit).
"""

import time

from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split

from skcnn import CNNClassifier


def main():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=0.25, random_state=0, stratify=y
    )
    search = GridSearchCV(
        CNNClassifier(
            conv_filters=(16, 32), batch_size=32, max_iter=20, random_state=0
        ),
        {
            "dropout": [0.0, 0.3],
            "batch_norm": [False, True],
            "learning_rate_init": [1e-3, 3e-3],
        },
        cv=3,
        n_jobs=2,
    )
    start = time.perf_counter()
    search.fit(X_train, y_train)
    print(
        f"{len(search.cv_results_['params'])} candidates x 3 folds in "
        f"{time.perf_counter() - start:.0f} s"
    )
    for params, score in zip(
        search.cv_results_["params"], search.cv_results_["mean_test_score"]
    ):
        print(f"  {score:.4f}  {params}")
    print(f"best: {search.best_params_}")
    accuracy = search.score(X_test, y_test)
    print(f"test accuracy of the refitted best model: {accuracy:.4f}")
    return search


if __name__ == "__main__":
    main()

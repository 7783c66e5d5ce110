"""The shop team's River pipelines: tideline calls one with spec.model.river.params.

A multiclass River model learns and predicts class names (``learn_one(x, "checkout")``,
``predict_proba_one(x)`` -> ``{"browse": 0.2, ...}``); tideline maps them to the classes
of spec.model.classes. Categorical features arrive as their bucket's token (a string).
"""

from river import compose, linear_model, multiclass, optim, preprocessing


def scaled_one_vs_rest(lr: float = 0.05, l2: float = 0.0):
    """Standardised numbers and one-hot categories into a logistic regression per class."""
    numbers = compose.SelectType(float) | preprocessing.StandardScaler()
    categories = compose.SelectType(str) | preprocessing.OneHotEncoder()
    per_class = linear_model.LogisticRegression(optim.SGD(lr), l2=l2)
    return (numbers + categories) | multiclass.OneVsRestClassifier(per_class)

"""River pipelines as a team writes them: tideline calls one with spec.model.river.params.

Rows reach a River model as dicts: numeric features as floats, categorical ones as
their bucket's token (a string), so River's one-hot encoder treats them as categories.
"""

from river import compose, linear_model, optim, preprocessing


def scaled_logistic(lr: float = 0.05, l2: float = 0.0):
    """Standardised numbers and one-hot categories into a logistic regression."""
    numbers = compose.SelectType(float) | preprocessing.StandardScaler()
    categories = compose.SelectType(str) | preprocessing.OneHotEncoder()
    return (numbers + categories) | linear_model.LogisticRegression(optim.SGD(lr), l2=l2)

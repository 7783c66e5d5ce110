"""Logistic regression with AdaGrad steps on running-standardised numeric features."""

import io

import numpy as np

from tideline.model import OnlineLearner


class AdaGradLogistic(OnlineLearner):
    def __init__(self, info, learning_rate=0.5, l2=1e-4):
        self.lr, self.l2 = float(learning_rate), float(l2)
        self.num = np.array([f.type == "numeric" for f in info.features])
        k = int(self.num.sum())
        self.w, self.g2 = np.zeros(k + 1), np.zeros(k + 1)  # weights (+ bias), squared grads
        self.n, self.mean, self.m2 = 0, np.zeros(k), np.zeros(k)  # running mean, variance

    def _design(self, X):
        sd = np.sqrt(self.m2 / max(self.n, 1)) + 1e-9
        Z = np.clip((X[:, self.num] - self.mean) / sd, -8, 8)
        return np.hstack([Z, np.ones((len(X), 1))])

    def learn(self, X, y):
        for x in X[:, self.num]:  # Welford's running mean and variance
            self.n += 1
            d = x - self.mean
            self.mean += d / self.n
            self.m2 += d * (x - self.mean)
        A = self._design(X)
        grad = A.T @ (self.predict(X) - y) / len(y) + self.l2 * self.w
        self.g2 += grad**2
        self.w -= self.lr * grad / (np.sqrt(self.g2) + 1e-8)

    def predict(self, X):
        return 1.0 / (1.0 + np.exp(-np.clip(self._design(X) @ self.w, -30, 30)))

    def save(self):
        out = io.BytesIO()
        np.savez(out, w=self.w, g2=self.g2, n=self.n, mean=self.mean, m2=self.m2)
        return out.getvalue()

    def load(self, state):
        s = np.load(io.BytesIO(state))  # arrays only: no pickle
        self.w, self.g2, self.n = s["w"], s["g2"], int(s["n"])
        self.mean, self.m2 = s["mean"], s["m2"]

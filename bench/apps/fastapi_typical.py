"""What a user writes by hand: FastAPI + pydantic + numpy (KServe's and MLServer's shape)."""

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

FEATURES = ["amount", "hour", "distance_km", "account_age_days"]
WEIGHTS = np.array([0.01, -0.02, 0.03, -0.001])
app = FastAPI()


class PredictRequest(BaseModel):
    instances: list[dict[str, float | str | None]]


class PredictResponse(BaseModel):
    predictions: list[float]


@app.post("/v1/models/fraud:predict", response_model=PredictResponse)
def predict(req: PredictRequest) -> PredictResponse:
    X = np.array([[float(r.get(f) or 0.0) for f in FEATURES] for r in req.instances])
    p = 1.0 / (1.0 + np.exp(-(X @ WEIGHTS)))
    return PredictResponse(predictions=p.tolist())

"""The model-from-code file that MLflow runs to build the pyfunc when it loads the model, so that no
pickled object is stored (MLflow 3's recommended way). It lives beside the code it imports, which
travels with the model (``code_paths``)."""

import mlflow

from sonoseg.registry.pyfunc import SegmentationModel

mlflow.models.set_model(SegmentationModel())

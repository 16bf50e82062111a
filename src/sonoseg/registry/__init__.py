"""MLflow model packaging (pyfunc), registration and the promotion gate."""

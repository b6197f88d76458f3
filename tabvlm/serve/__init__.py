"""The server: HTTP API (`api`), micro-batching in front of the model (`batcher`), in-memory
request decoding with limits (`inputs`), the slots that bound its memory and every wait
(`limits`) and the Gradio web UI (`ui`).

    from tabvlm.recognizer import TableRecognizer
    from tabvlm.serve import ServeConfig, create_app
    app = create_app(TableRecognizer.from_pretrained("configs/tiny.yaml"), ServeConfig(model_name="tiny"))
"""

from tabvlm.serve.api import ServeConfig, create_app
from tabvlm.serve.batcher import BatchConfig, Batcher, QueueFullError, RecognitionError

__all__ = ["BatchConfig", "Batcher", "QueueFullError", "RecognitionError", "ServeConfig", "create_app"]

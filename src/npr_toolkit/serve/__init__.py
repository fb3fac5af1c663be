"""``npr serve``: the project's HTTP server, on FastAPI and uvicorn (docs/design.md §4).

Two APIs over one torch engine: SGLang's native ``/generate`` subset with *sequential* decoding (a
plain LM server, which the SGLang backend drives to do its own fork/join; ``sglang_routes.py``), and an
OpenAI-compatible ``/v1`` where the server runs the *parallel* engine itself (``openai_routes.py``).

Modules, one noun each: ``app`` (the application, uvicorn, start and stop), ``config`` (settings and
limits), ``service`` (input checks shared by both APIs), ``scheduler`` (the engine worker and its
bounded queue), ``text`` (a choice's text as it becomes final), ``limits`` (deadlines on slow
connections), ``weights`` (the weights' version and updates), ``model_tensors`` (the model's tensors
by name), and the three route modules (``weight_routes``: SGLang's weight-update endpoints). Wire
schemas live in ``engine/`` (``sglang_wire``, ``openai_wire``, ``weight_wire``), shared with the
client backends and the weight-sync client.

Usage: ``serve("runs/sft", ServeConfig(port=30000))``; ``with Server(engine) as url: ...`` (tests).
"""

from .app import Server, create_app, serve
from .config import ServeConfig

__all__ = ["ServeConfig", "Server", "create_app", "serve"]

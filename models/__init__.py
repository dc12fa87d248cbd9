"""Backbones, embedding extraction and heads, in backend-agnostic Keras 3. Knows nothing of the
store or the app. Submodules import Keras lazily, so `import models` itself is cheap."""

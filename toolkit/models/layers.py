"""Layers substituted into PP-OCR models so that Paddle Lite can convert them.

A module of its own because dy2static resolves names through module globals: a class
defined inside a function cannot see `paddle` when traced.
"""

from toolkit.engine import paddle as _import_paddle

_import_paddle()
import paddle  # noqa: E402


class MulSigmoid(paddle.nn.Layer):
    """x * sigmoid(x): Paddle 2.6 exports nn.Swish as `swish` without `beta`, which Lite rejects."""

    def forward(self, x):
        return x * paddle.nn.functional.sigmoid(x)

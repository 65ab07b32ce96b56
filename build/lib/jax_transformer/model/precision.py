"""Mixed precision for the Transformer of transformer.py: which dtype each product runs in under bf16 compute.

Nothing here depends on the backend: the choices are functions of the compute dtype alone (`ModelConfig.dtype`), so a
model computes the same numbers on every device (up to each device's own rounding of the same operations).

* Linear layers and the tied output projection multiply bf16 operands into an fp32 result (`bf16_matmul`, `Linear`),
  in the forward pass and in their gradients.
* Attention (`attention_compute_dtype`): the two batched products of Eq. 1 run in fp32 under bf16 compute; the
  softmax always runs in fp32.

Why. XLA:CPU multiplies bf16 x bf16 -> bf16 slowly (245 GFLOP/s on a 2-core Xeon with AMX, below its fp32 298), but
bf16 x bf16 -> fp32 on the CPU's bf16 matrix units (1,570 GFLOP/s there; bench/peers.py prints both). So under bf16
compute every Linear layer multiplies bf16 operands into an fp32 result, and so do their gradients (a custom VJP: JAX's
own transpose of such a product would multiply the fp32 cotangent in fp32). On GPUs and TPUs this is the usual bf16
matmul with fp32 accumulation. The attention products (320-token self-attention, forward: 41 ms in bf16 against 18 in
fp32 on XLA:CPU) are small next to the projections on any device, so they run in fp32 everywhere: one policy, the
numbers that the CPU tests and tolerances were written against, at a small cost on accelerators.
"""

import jax
import jax.numpy as jnp
from flax import nnx


def attention_compute_dtype(dtype) -> jnp.dtype:
    """The dtype of the query/key/value products in scaled dot-product attention for compute dtype `dtype`: fp32
    under bf16 compute, else `dtype` itself (fp16 and fp32 unchanged). The softmax is fp32 in any case."""
    dtype = jnp.dtype(dtype)
    return jnp.dtype(jnp.float32) if dtype == jnp.dtype(jnp.bfloat16) else dtype


@jax.custom_vjp
def bf16_matmul(x, w):
    """x (..., n) @ w (n, m) of bf16 operands, accumulated and returned in fp32. (..., m)"""
    return jnp.dot(x, w, preferred_element_type=jnp.float32)


def _bf16_matmul_fwd(x, w):
    return bf16_matmul(x, w), (x, w)


def _bf16_matmul_bwd(residuals, grad):  # grad: (..., m) fp32
    x, w = residuals
    grad = grad.astype(x.dtype)
    grad_x = jnp.dot(grad, w.T, preferred_element_type=jnp.float32).astype(x.dtype)  # (..., n)
    rows_x, rows_grad = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
    grad_w = jnp.dot(rows_x.T, rows_grad, preferred_element_type=jnp.float32).astype(w.dtype)  # (n, m)
    return grad_x, grad_w


bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)


class Linear(nnx.Linear):
    """`nnx.Linear` (same parameters) whose bf16 compute multiplies with `bf16_matmul` and adds the bias in fp32 before
    rounding the output to bf16: a bias added in bf16 gets its gradient from a sum of bf16 values, which XLA:CPU
    accumulates element by element with bf16 rounding at each add (a third of the base model's bf16 step)."""

    def __call__(self, x):
        if self.dtype is None or jnp.dtype(self.dtype) != jnp.bfloat16:
            return super().__call__(x)
        y = bf16_matmul(x.astype(jnp.bfloat16), self.kernel[...].astype(jnp.bfloat16))
        if self.bias is not None:
            y = y + self.bias[...].astype(jnp.float32)
        return y.astype(jnp.bfloat16)

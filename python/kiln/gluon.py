"""kiln.gluon: losses and the Trainer, named as in mx.gluon (``gluon.nn`` is
kiln.nn, ``gluon.loss``, ``gluon.Trainer``)."""
from . import _kiln, nn, nd


class _Loss(nn.HybridBlock):
    """Gluon's losses: one value per sample ([N]); backward of a vector sums
    it, and Trainer.step(batch_size) divides by the batch."""


class SoftmaxCrossEntropyLoss(_Loss):
    """-log softmax(pred)[label] per sample; pred [N, C], label [N] integer."""

    def __init__(self, axis=-1):
        super().__init__()
        self._axis = axis

    def forward(self, pred, label):
        return -nd.pick(nd.log_softmax(pred, self._axis), label, self._axis)


class L2Loss(_Loss):
    """0.5 (pred - label)^2, averaged over each sample's elements."""

    def forward(self, pred, label):
        d = nd.square(pred - label) * 0.5
        return d.reshape(d.shape[0], -1).mean(axis=1) if d.ndim > 1 else d


class L1Loss(_Loss):
    def forward(self, pred, label):
        d = nd.abs(pred - label)
        return d.reshape(d.shape[0], -1).mean(axis=1) if d.ndim > 1 else d


class _LossModule:
    SoftmaxCrossEntropyLoss = SoftmaxCrossEntropyLoss
    SoftmaxCELoss = SoftmaxCrossEntropyLoss
    L2Loss = L2Loss
    L1Loss = L1Loss


loss = _LossModule()


class Trainer:
    """Updates every parameter of a block that has a gradient:
    Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.1}). Optimisers
    sgd (momentum, wd), adam and adamw (beta1, beta2, epsilon, wd)."""

    def __init__(self, params, optimizer, optimizer_params=None):
        block = params._block if isinstance(params, nn.ParameterDict) else params
        if not isinstance(block, nn.Block):
            raise TypeError("Trainer takes net.collect_params() or a Block")
        p = dict(optimizer_params or {})
        kind = optimizer.lower()
        lr = p.pop("learning_rate", 0.01 if kind == "sgd" else 0.001)
        args = (lr, p.pop("momentum", 0.0), p.pop("wd", -1.0), p.pop("beta1", 0.9), p.pop("beta2", 0.999),
                p.pop("epsilon", 1e-8))
        if p:
            raise ValueError("unknown optimizer parameters: %s" % ", ".join(sorted(p)))
        self._block = block
        self._h = _kiln.trainer_new(block._h, kind, *args)

    def step(self, batch_size):
        _kiln.trainer_step(self._h, batch_size)

    @property
    def learning_rate(self):
        return _kiln.trainer_lr(self._h)


class utils:
    """gluon.utils.split_and_load (d2l 13.5): data split along axis 0 into
    len(ctx_list) slices (sizes differing by at most one), slice i copied to
    ctx_list[i]."""

    @staticmethod
    def split_and_load(data, ctx_list, batch_axis=0, even_split=True):
        if batch_axis != 0:
            raise NotImplementedError("split_and_load splits along axis 0")
        if even_split and data.shape[0] % len(ctx_list):
            raise ValueError("a batch of %d does not split evenly over %d devices (pass even_split=False)"
                             % (data.shape[0], len(ctx_list)))
        return _kiln.split_and_load(data, [c.device_id for c in ctx_list])

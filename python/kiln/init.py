"""kiln.init: initialisers for Block.initialize (mx.init); fans as PyTorch's."""

# kiln_init_kind values (include/kiln.h).
_CONSTANT, _UNIFORM, _NORMAL, _XAVIER_U, _XAVIER_N, _KAIMING_U, _KAIMING_N = range(1, 8)


class Initializer:
    def __init__(self, kind, a=0.0, b=0.0):
        self._spec = (kind, float(a), float(b))


class Constant(Initializer):
    def __init__(self, value):
        super().__init__(_CONSTANT, value)


class Zero(Constant):
    def __init__(self):
        super().__init__(0.0)


class One(Constant):
    def __init__(self):
        super().__init__(1.0)


class Uniform(Initializer):
    """U(-scale, scale), as mx.init.Uniform."""

    def __init__(self, scale=0.07):
        super().__init__(_UNIFORM, -scale, scale)


class Normal(Initializer):
    """N(0, sigma), as mx.init.Normal."""

    def __init__(self, sigma=0.01):
        super().__init__(_NORMAL, 0.0, sigma)


class Xavier(Initializer):
    def __init__(self, rnd_type="uniform", magnitude=1.0):
        super().__init__(_XAVIER_U if rnd_type == "uniform" else _XAVIER_N, magnitude)


class Kaiming(Initializer):
    def __init__(self, rnd_type="uniform", negative_slope=0.0):
        super().__init__(_KAIMING_U if rnd_type == "uniform" else _KAIMING_N, negative_slope)


def spec(init):
    return None if init is None else init._spec

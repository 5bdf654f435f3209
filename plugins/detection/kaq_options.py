"""The choices of KAQ's options (equations in :mod:`edgejoule.plugins.detection.kaq`), without torch: the
``detect`` command checks them before it imports torch, the quantizer and its QAT loop use them."""

POLICY_NAMES = ("learned", "noise-enhancement", "noise-level", "static")
MMD_SCHEDULES = ("linear", "constant")
MMD_TARGETS = ("output", "decisions", "activations")  # the first is the default
MMD_TEACHERS = ("frozen", "along")  # the first is the default

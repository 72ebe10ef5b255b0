"""Condition monitors: power, network, sleep, idle, temperature and disk, published as ``Conditions``."""

from syftd.conditions.monitor import ConditionsMonitor
from syftd.conditions.value import FACTS, Conditions, Connectivity

__all__ = ["FACTS", "Conditions", "ConditionsMonitor", "Connectivity"]

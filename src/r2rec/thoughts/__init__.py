"""Interaction-of-thought traces: progressive masked prompting, teachers, the faithfulness filter.

Kept light on import (no torch): the ``hf:`` teacher imports its model code only when it is built.
"""

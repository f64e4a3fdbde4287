"""The multi-seed compression bench: config, tasks, training, protocols and the policy.

Everything here needs the ``bench`` extra (torch, peft, transformers, datasets); the modules
import those lazily so that ``gradience-hub --help`` and the audit path stay light.
"""

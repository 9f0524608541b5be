"""The reply templates shipped with deskq (installed as the ``deskq_templates`` package)."""

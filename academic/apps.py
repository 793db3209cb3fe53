from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.utils.translation import gettext_lazy as _


class AcademicConfig(AppConfig):
    name = "academic"
    verbose_name = _("Academic workspace")

    def ready(self):
        checks.register(check_offline_engine)


def check_offline_engine(app_configs, **kwargs):
    """IMG2TEX_ENGINE=offline without the extra would send formulas to the
    vision model, which is what an operator who set it meant to avoid."""
    from academic import ocr_engine

    if settings.IMG2TEX_ENGINE == "offline" and not ocr_engine.is_available():
        return [
            checks.Error(
                "IMG2TEX_ENGINE=offline but the offline formula engine is not "
                "installed",
                hint="pip install -r requirements-ocr.txt",
                id="academic.E001",
            )
        ]
    return []

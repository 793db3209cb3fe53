from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AcademicConfig(AppConfig):
    name = "academic"
    verbose_name = _("Academic workspace")

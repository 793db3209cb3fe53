from django.db import migrations, models


def guess_vision_of_known_models(apps, schema_editor):
    """Profiles made before the field existed get the guess new ones get."""
    from assistant.models import VISION_PATTERN

    ModelProfile = apps.get_model("assistant", "ModelProfile")
    for profile in ModelProfile.objects.all():
        if VISION_PATTERN.search(profile.name):
            profile.supports_vision = True
            profile.save(update_fields=["supports_vision"])


class Migration(migrations.Migration):
    dependencies = [
        ("assistant", "0003_modelprofile_concurrency_limit_and_more"),
    ]

    operations = [
        migrations.AddField(
            model_name="modelprofile",
            name="supports_vision",
            field=models.BooleanField(
                default=False,
                help_text=(
                    "Tick when the model accepts images (image_url parts); the "
                    "image converter uses only such models."
                ),
                verbose_name="reads images",
            ),
        ),
        migrations.RunPython(guess_vision_of_known_models, migrations.RunPython.noop),
    ]

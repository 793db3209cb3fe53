import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0012_conversation_context'),
    ]

    operations = [
        migrations.AddField(
            model_name='conversation',
            name='current_leaf',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='chat.message'),
        ),
        migrations.AddField(
            model_name='message',
            name='parent',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='children', to='chat.message'),
        ),
        migrations.AddField(
            model_name='message',
            name='shown_at',
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
    ]

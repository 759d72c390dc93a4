from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('usage', '0008_conntrack'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='usagerollup',
            index=models.Index(fields=['resolution', 'id'], name='usage_rollup_newest'),
        ),
        migrations.CreateModel(
            name='PeriodFigure',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('days', models.PositiveSmallIntegerField()),
                ('name', models.CharField(max_length=40)),
                ('version', models.CharField(max_length=200)),
                ('computed_at', models.DateTimeField(help_text='when it was stored (old ones are pruned)')),
                ('value', models.TextField()),
            ],
            options={
                'indexes': [models.Index(fields=['computed_at'], name='usage_figure_computed_at')],
                'constraints': [models.UniqueConstraint(fields=('days', 'name', 'version'), name='one_period_figure_per_version')],
            },
        ),
    ]

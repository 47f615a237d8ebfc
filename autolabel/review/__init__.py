"""A person in the loop: review a uniform random sample of a run's accepted pseudo-labels,
certify their precision from it, and feed the corrections back into the loop.

    sample.py       draw the sample (uniform, or per predicted class) from a finished run; sample.json
    verdicts.py     review.csv (`path,label,verdict,correct_label`): read, check, write
    page.py         review.html: one self-contained page (thumbnails inlined), assets in assets/
    labelstudio.py  the same items as Label Studio tasks, and an export back into review.csv
    bounds.py       one-sided Clopper-Pearson lower bound, reviews still needed for a target
    certify.py      the checks (same run, same labels, same sample) and certificate.json
    track.py        the certificate on the run's MLflow parent (warnings, never failures)
    feedback.py     `--reviewed`: reviewed images become human labels from the next trial on

The run folder keeps everything under RUN/review/.
"""

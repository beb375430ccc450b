"""s2s_jax/redact.py: a storage URL's password and secret query values are hidden wherever it is stored or printed."""

from absl.testing import absltest
from absl.testing import parameterized

from s2s_jax import redact


class RedactTest(parameterized.TestCase):
  @parameterized.parameters(
    ('postgresql://user:s3cret@db.example:5432/optuna', 'postgresql://user:***@db.example:5432/optuna'),
    (
      'postgresql+psycopg2://user:p%40ss@host/db?sslmode=require',
      'postgresql+psycopg2://user:***@host/db?sslmode=require',
    ),
    ('postgresql://postgres:postgres@h/db', 'postgresql://postgres:***@h/db'),  # a password equal to the user name
    ('mysql+pymysql://u:pa/ss@h/d', 'mysql+pymysql://u:***@h/d'),  # an unescaped '/' (SQLAlchemy reads it)
    ('postgresql://u:s3c@ret@h/d', 'postgresql://u:***@h/d'),  # an unescaped '@': up to the last one
    ('postgresql://u@h/d?password=s3cret&sslmode=require', 'postgresql://u@h/d?password=***&sslmode=require'),
    ('postgresql://u@h/d?sslpassword=a&token=b&sslmode=c', 'postgresql://u@h/d?sslpassword=***&token=***&sslmode=c'),
    ('sqlite:////tmp/x/study.db', 'sqlite:////tmp/x/study.db'),
    ('postgresql://user@host/db', 'postgresql://user@host/db'),
    ('postgresql://[::1]:5432/db', 'postgresql://[::1]:5432/db'),
    ('user:s3cret@host/db', 'user:***@host/db'),  # not a URL, still no password shown
    ('', ''),
  )
  def test_url(self, url, shown):
    self.assertEqual(redact.url(url), shown)
    self.assertEqual(redact.url(shown), shown)  # idempotent
    self.assertEqual(redact.has_hidden(shown), shown != url)

  def test_text_hides_every_form_of_the_secret(self):
    url = 'postgresql://user:p%40ss-1@host/db?sslpassword=k3y'
    message = f'cannot connect to {url}: password p@ss-1 (p%40ss-1) rejected; k3y unreadable'
    self.assertEqual(
      redact.text(message, url),
      'cannot connect to postgresql://user:***@host/db?sslpassword=***: password *** (***) rejected; *** unreadable',
    )
    self.assertEqual(
      redact.text('Could not parse postgres ql://u:s3cret@h', 'postgres ql://u:s3cret@h'),
      'Could not parse postgres ql://u:***@h',
    )
    self.assertEqual(redact.text('no secret here', 'sqlite:////tmp/x.db'), 'no secret here')

  def test_without_hidden(self):
    self.assertEqual(redact.without_hidden('postgresql://user:***@host/db'), 'postgresql://user@host/db')
    self.assertEqual(
      redact.without_hidden('sqlite:///file:/x.db?mode=rwc&password=***&uri=true'),
      'sqlite:///file:/x.db?mode=rwc&uri=true',
    )
    self.assertEqual(redact.without_hidden('postgresql://u@h/d?password=***'), 'postgresql://u@h/d')
    self.assertEqual(redact.without_hidden('postgresql://user:s3cret@host/db'), 'postgresql://user:s3cret@host/db')


if __name__ == '__main__':
  absltest.main()

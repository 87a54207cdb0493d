"""`grader serve`: a grading service students submit to, with a database, a web page and a JSON API.

    db.py        the tables (SQLAlchemy 2) and their migrations (Alembic, migrations/)
    storage.py   uploads, content-addressed on disk, durable before a request answers
    queue.py     the queue in the database: enqueue, claim, finish, recover after a crash
    worker.py    the threads that take what the queue holds, each with a grading process of its own
    grades.py    which submission's grade counts; the class's grades for the summary and the exports
    auth.py      tokens (stored hashed), roles, CSRF tokens for the forms
    app.py       the ASGI application (FastAPI): pages, the API and its OpenAPI schema
    client.py    a student's side: upload, wait, print (grader submit, grader.student.submit)
    server.py    one command's service: database, workers and web server started and stopped together
"""

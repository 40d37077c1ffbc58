"""An auth manager for tests/e2e/test_ui.py's real Airflow: Airflow's SimpleAuthManager with DAG-level read grants per
user, as a deployment's auth manager (FAB's `DAG:<dag_id>` permissions, Keycloak's resources) gives them; the simple
one has none below its roles. The api-server loads it through [core] auth_manager (AIRFLOW__CORE__AUTH_MANAGER) with
this folder on PYTHONPATH.

- LLMD_TEST_AIRFLOW_USERS: more users, `name:role,...` like [core] simple_auth_manager_users (scripts/airflow.sh
  pins that setting to the admin; the simple auth manager's login reads SimpleAuthManager.get_users itself:
  airflow/api_fastapi/auth/managers/simple/services/login.py @3.3.2, so the extra users are added there). Their
  passwords are generated into the same file as the admin's.
- LLMD_TEST_DAG_GRANTS: JSON {user: [dag_id, ...]}: a user named there may read only those DAGs (every other
  permission as their role gives it); a user not named there reads DAGs as the simple auth manager decides.
"""

from __future__ import annotations

import json
import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

_configured_users = SimpleAuthManager.get_users


def _users() -> list[SimpleAuthManagerUser]:
    extra = [u.split(":") for u in os.environ.get("LLMD_TEST_AIRFLOW_USERS", "").split(",") if u.strip()]
    return _configured_users() + [SimpleAuthManagerUser(username=name, role=role) for name, role in extra]


SimpleAuthManager.get_users = staticmethod(_users)  # type: ignore[method-assign]


def _grants() -> dict[str, list[str]]:
    return json.loads(os.environ.get("LLMD_TEST_DAG_GRANTS", "{}"))


class DagGrantsAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method: Any, user: SimpleAuthManagerUser, access_entity: Any = None,
                          details: Any = None) -> bool:
        granted = _grants().get(user.username)
        if granted is not None and (details is None or details.id not in granted):
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)

"""Staff pages (the Django admin at /admin/ is the back office)."""

from django.urls import path
from django.shortcuts import redirect

from hosting.core import account, roles
from hosting.customers import views as customers
from hosting.environments import staff as templates
from hosting.nodes import views as nodes
from hosting.operations import views as operations
from hosting.plans import views as plans
from hosting.usage import views as usage



def home(request):
    """The first staff page the signed-in role may open (the nodes page for anyone
    else, whose guard then answers: the sign-in page or 403)."""
    for capability, page in roles.HOME_PAGES:
        if roles.can(request.user, capability):
            return redirect(page)
    return redirect("staff-nodes")


urlpatterns = [
    path("", home, name="staff-home"),
    path("nodes/", nodes.node_list, name="staff-nodes"),
    path("nodes/<int:pk>/", nodes.node_detail, name="staff-node"),
    path("nodes/<int:pk>/remove/", nodes.node_remove, name="staff-node-remove"),
    path("nodes/<int:pk>/evacuate/", nodes.node_evacuate, name="staff-node-evacuate"),
    path("nodes/<int:pk>/backups/", nodes.node_backups, name="staff-node-backups"),
    path("plans/", plans.plan_list, name="staff-plans"),
    path("plans/new/", plans.plan_edit, name="staff-plan-new"),
    path("plans/<int:pk>/", plans.plan_edit, name="staff-plan-edit"),
    path("plans/<int:pk>/retire/", plans.plan_retire, name="staff-plan-retire"),
    path("templates/", templates.template_list, name="staff-templates"),
    path("templates/<int:pk>/retire/", templates.template_active, {"active": False},
         name="staff-template-retire"),
    path("templates/<int:pk>/offer/", templates.template_active, {"active": True},
         name="staff-template-offer"),
    path("templates/<int:pk>/share/", templates.template_sharing, {"share": True},
         name="staff-template-share"),
    path("templates/<int:pk>/copy/", templates.template_sharing, {"share": False},
         name="staff-template-copy"),
    path("customers/", customers.customer_list, name="staff-customers"),
    path("customers/<int:pk>/<slug:status>/", customers.customer_status,
         name="staff-customer-status"),
    path("vps/", operations.environment_list, name="staff-vps"),
    path("vps/<int:veid>/plan/", templates.staff_change_plan, name="staff-vps-plan"),
    path("vps/<int:veid>/seccomp/", templates.staff_seccomp, name="staff-vps-seccomp"),
    path("vps/<int:veid>/migrate/", templates.staff_migrate, name="staff-vps-migrate"),
    path("operations/", operations.operation_list, name="staff-operations"),
    path("audit/", operations.audit_list, name="staff-audit"),
    path("api-keys/", account.staff_api_keys, name="staff-api-keys"),
    path("api-keys/<int:pk>/revoke/", account.staff_api_key_revoke, name="staff-api-key-revoke"),
    path("reports/overcommit/", usage.overcommit, name="staff-overcommit"),
    path("reports/overcommit/rebalance/", usage.rebalance_apply, name="staff-rebalance"),
    path("rebalances/<int:pk>/cancel/", usage.rebalance_cancel, name="staff-rebalance-cancel"),
]

from __future__ import annotations

from django.urls import path

from review import views, views_backlog

urlpatterns = [
    path("review/", views.review_queue, name="review-queue"),
    path("review/start/", views.review_start, name="review-start"),
    path("review/tasks/<int:pk>/", views.review_task, name="review-task"),
    path("review/tasks/<int:pk>/claim/", views.review_task_claim, name="review-task-claim"),
    path("review/tasks/<int:pk>/decide/", views.review_task_decide, name="review-task-decide"),
    path("review/tasks/<int:pk>/release/", views.review_task_release, name="review-task-release"),
    path("review/tasks/<int:pk>/skip/", views.review_task_skip, name="review-task-skip"),
    path("review/tasks/<int:pk>/renew/", views.review_task_renew, name="review-task-renew"),
    path("review/tasks/<int:pk>/assign/", views.review_task_assign, name="review-task-assign"),
    path(
        "review/queues/<int:pk>/members/", views.review_queue_members, name="review-queue-members"
    ),
    path(
        "review/queues/<int:pk>/members/<int:user_pk>/remove/",
        views.review_queue_member_remove,
        name="review-queue-member-remove",
    ),
    path("review/backlog/", views_backlog.review_backlog, name="review-backlog"),
    path("review/statistics/", views_backlog.review_stats, name="review-stats"),
    path(
        "review/steps/<int:pk>/audit-threshold/",
        views_backlog.review_audit_threshold,
        name="review-audit-threshold",
    ),
]

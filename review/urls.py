from __future__ import annotations

from django.urls import path

from review import views

urlpatterns = [
    path("review/", views.review_queue, name="review-queue"),
]

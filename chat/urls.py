from django.urls import path

from chat import views

urlpatterns = [
    path("", views.home, name="chat-home"),
    path("c/<int:pk>/", views.conversation, name="chat-conversation"),
]

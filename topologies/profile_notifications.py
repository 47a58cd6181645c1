"""Stateless: notify a member when someone notable views their profile.

profile-views {viewer_id, viewer_title, profile_id, source, ts}
  -> keep views whose viewer_title contains Recruiter, Hiring Manager, CEO or CTO
  -> re-key by profile_id -> profile-view-notifications
"""

from streams import Topology

NOTABLE_TITLES = ("Recruiter", "Hiring Manager", "CEO", "CTO")


def is_notable(view: dict) -> bool:
    title = view.get("viewer_title") or ""
    return any(t in title for t in NOTABLE_TITLES)


topology = Topology("profile_notifications",
                    description="profile views by recruiters, hiring managers and executives")

(topology.stream("profile-views", timestamp="ts")
    .filter(is_notable)
    .select_key(lambda view: view["profile_id"])
    .to("profile-view-notifications"))

//! Resource kinds and the seven event names they fire.

use std::fmt;

/// A kind of resource, named as in its URL path (`/v2/<kind>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Projects,
    Tasks,
    Subtasks,
    Clients,
    Events,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Projects,
        Kind::Tasks,
        Kind::Subtasks,
        Kind::Clients,
        Kind::Events,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Projects => "projects",
            Kind::Tasks => "tasks",
            Kind::Subtasks => "subtasks",
            Kind::Clients => "clients",
            Kind::Events => "events",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Returns the event fired when a resource of this kind is created.
    pub fn created_event(self) -> Event {
        match self {
            Kind::Projects => Event::NewProject,
            Kind::Tasks => Event::NewTask,
            Kind::Subtasks => Event::NewSubtask,
            Kind::Clients => Event::NewClient,
            Kind::Events => Event::NewEvent,
        }
    }

    /// Returns the event fired when a resource of this kind changes to completed,
    /// for the kinds that can be completed.
    pub fn completed_event(self) -> Option<Event> {
        match self {
            Kind::Tasks => Some(Event::CompletedTask),
            Kind::Subtasks => Some(Event::CompletedSubtask),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// An event a subscription can listen to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    NewProject,
    NewTask,
    CompletedTask,
    NewSubtask,
    CompletedSubtask,
    NewClient,
    NewEvent,
}

impl Event {
    pub const ALL: [Event; 7] = [
        Event::NewProject,
        Event::NewTask,
        Event::CompletedTask,
        Event::NewSubtask,
        Event::CompletedSubtask,
        Event::NewClient,
        Event::NewEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::NewProject => "new_project",
            Event::NewTask => "new_task",
            Event::CompletedTask => "completed_task",
            Event::NewSubtask => "new_subtask",
            Event::CompletedSubtask => "completed_subtask",
            Event::NewClient => "new_client",
            Event::NewEvent => "new_event",
        }
    }

    pub fn parse(text: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|event| event.as_str() == text)
    }

    /// Lists all event names, comma-separated, for error messages.
    pub fn names() -> String {
        Event::ALL.map(Event::as_str).join(", ")
    }
}

impl fmt::Display for Event {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for event in Event::ALL {
            assert_eq!(Event::parse(event.as_str()), Some(event));
        }
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Event::parse("New_Task"), None);
    }
}

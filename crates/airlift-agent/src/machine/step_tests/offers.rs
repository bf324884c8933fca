//! Offers: ignored while a job is under way; a declined one reported.

use super::*;

#[test]
fn offers_are_ignored_while_a_job_is_under_way_even_the_same_one() {
    for state in representative_states()
        .into_iter()
        .filter(|s| *s != State::Idle)
    {
        for offer in [image_job(), in_place_job(), local_image_job()] {
            assert_eq!(
                step(state.clone(), Event::Offer(offer)),
                (state.clone(), vec![])
            );
        }
    }
}

#[test]
fn a_declined_offer_is_reported_from_idle() {
    assert_eq!(
        step(
            State::Idle,
            Event::OfferDeclined {
                deployment_id: deployment(),
                decline: Decline::AlreadyInstalled
            }
        ),
        (State::Idle, vec![report(UpdateState::AlreadyInstalled)])
    );
    assert_eq!(
        step(
            State::Idle,
            Event::OfferDeclined {
                deployment_id: deployment(),
                decline: Decline::Refused {
                    reason: "no trusted key signed it".into()
                }
            }
        ),
        (
            State::Idle,
            vec![report_with(
                UpdateState::Failure,
                "no trusted key signed it"
            )]
        )
    );
}

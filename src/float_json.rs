//! Checkpoint JSON for numbers that may not be finite. serde_json writes NaN and ±inf as
//! `null`, which reads back as an absent observation or fails to read as an `f32`: a run that
//! skipped a non-finite loss (`--on-nan skip`) would leave a checkpoint it cannot resume
//! from. These fields keep such values as the strings "NaN", "inf" and "-inf"; finite values
//! are written as before, and a `null` left by an older checkpoint reads as it did (an absent
//! observation value) or, where a number must be there, as NaN.

use kiln_schedule::Observation;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number as it is stored.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Number(f64),
    Text(String),
    Null(()),
}

fn text(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

/// The value of `stored`; `None` for `null`.
fn value<E: serde::de::Error>(stored: Stored) -> Result<Option<f64>, E> {
    match stored {
        Stored::Number(v) => Ok(Some(v)),
        Stored::Text(t) => match t.as_str() {
            "NaN" => Ok(Some(f64::NAN)),
            "inf" => Ok(Some(f64::INFINITY)),
            "-inf" => Ok(Some(f64::NEG_INFINITY)),
            _ => Err(E::custom(format!(
                "{t:?} is not a number (numbers that are not finite are \"NaN\", \"inf\" or \"-inf\")"
            ))),
        },
        Stored::Null(()) => Ok(None),
    }
}

/// A number as it is written: itself (f32 or f64, serde_json's shortest form for its width)
/// when finite, else its name.
struct Written<T>(T);

impl<T: Serialize + Copy + Into<f64>> Serialize for Written<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v: f64 = self.0.into();
        if v.is_finite() {
            self.0.serialize(s)
        } else {
            s.serialize_str(text(v))
        }
    }
}

/// `#[serde(with)]` for a `Vec<f32>` of losses.
pub mod f32s {
    use super::*;

    pub fn serialize<S: Serializer>(values: &[f32], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(values.iter().map(|&v| Written(v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        Vec::<Stored>::deserialize(d)?
            .into_iter()
            // serde_json reads an f32 through an f64 too: the same value as before.
            .map(|s| Ok(value(s)?.unwrap_or(f64::NAN) as f32))
            .collect()
    }
}

#[derive(Serialize)]
struct ObservationOut {
    loss: Option<Written<f64>>,
    grad_norm_sq: Option<Written<f64>>,
}

#[derive(Deserialize)]
struct ObservationIn {
    #[serde(default = "absent")]
    loss: Stored,
    #[serde(default = "absent")]
    grad_norm_sq: Stored,
}

fn absent() -> Stored {
    Stored::Null(())
}

/// `#[serde(with)]` for a trainer's carried `(update, observation)` pairs.
pub mod observations {
    use super::*;

    pub fn serialize<S: Serializer>(pairs: &[(u64, Observation)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(pairs.iter().map(|(u, o)| {
            (
                u,
                ObservationOut {
                    loss: o.loss.map(Written),
                    grad_norm_sq: o.grad_norm_sq.map(Written),
                },
            )
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(u64, Observation)>, D::Error> {
        Vec::<(u64, ObservationIn)>::deserialize(d)?
            .into_iter()
            .map(|(u, o)| {
                Ok((
                    u,
                    Observation {
                        loss: value(o.loss)?,
                        grad_norm_sq: value(o.grad_norm_sq)?,
                    },
                ))
            })
            .collect::<Result<_, D::Error>>()
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Losses(#[serde(with = "f32s")] Vec<f32>);

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Carried(#[serde(with = "observations")] Vec<(u64, Observation)>);

    #[test]
    fn numbers_that_are_not_finite_survive_a_round_trip() {
        let losses = Losses(vec![
            0.1,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            2.5e-3,
        ]);
        let text = serde_json::to_string(&losses).unwrap();
        assert_eq!(text, r#"[0.1,"NaN","inf","-inf",0.0025]"#);
        let back: Losses = serde_json::from_str(&text).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.0), bits(&losses.0));
        // What older checkpoints hold: plain numbers, and null where a loss was NaN.
        let old: Losses = serde_json::from_str("[0.1,null]").unwrap();
        assert_eq!(old.0[0], 0.1);
        assert!(old.0[1].is_nan());
        let e = serde_json::from_str::<Losses>(r#"["nan?"]"#).unwrap_err();
        assert!(e.to_string().contains("not a number"), "{e}");

        let carried = Carried(vec![
            (
                4,
                Observation {
                    loss: Some(f64::NAN),
                    grad_norm_sq: None,
                },
            ),
            (
                5,
                Observation {
                    loss: Some(0.25),
                    grad_norm_sq: Some(f64::INFINITY),
                },
            ),
        ]);
        let text = serde_json::to_string(&carried).unwrap();
        assert_eq!(
            text,
            r#"[[4,{"loss":"NaN","grad_norm_sq":null}],[5,{"loss":0.25,"grad_norm_sq":"inf"}]]"#
        );
        let back: Carried = serde_json::from_str(&text).unwrap();
        assert!(back.0[0].1.loss.unwrap().is_nan());
        assert_eq!(back.0[0].1.grad_norm_sq, None);
        assert_eq!(back.0[1], carried.0[1]);
    }
}
